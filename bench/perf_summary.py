#!/usr/bin/env python3
"""Summarise `perf script` output of a `perf record --call-graph dwarf` run: samples per thread,
the top leaf symbols of each thread and, for each, its nearest celldiff/burn callers.
Usage: perf script -i perf.data > s.txt; bench/perf_summary.py s.txt [TOP]
       bench/perf_summary.py s.txt --stack NAME...   share of samples whose stack contains NAME
         (NAME may be A|B|...: samples that contain any of them)
(docs/RESULTS.md, "What changed")."""
import re,collections,sys
if len(sys.argv) > 2 and sys.argv[2] == '--stack':
    ss=[x for x in open(sys.argv[1]).read().split('\n\n') if x.strip()]
    for k in sys.argv[3:]:
        n=sum(any(a in x for a in k.split('|')) for x in ss)
        print(f'{k}: {n} of {len(ss)} samples ({100*n/len(ss):.1f} %)')
    sys.exit(0)
samples=open(sys.argv[1]).read().split('\n\n')
th=collections.Counter(); top=collections.defaultdict(collections.Counter); callers=collections.defaultdict(collections.Counter)
tot=0
for s in samples:
    ls=s.strip().split('\n')
    if len(ls)<2: continue
    tid=ls[0].split()[1]
    th[tid]+=1; tot+=1
    f=re.sub(r'^\s*[0-9a-f]+ ','',ls[1].strip()).split('+0x')[0][:80]
    top[tid][f]+=1
    fr=[re.sub(r'^\s*[0-9a-f]+ ','',l.strip()).split('+0x')[0] for l in ls[2:]]
    key=[x[:100] for x in fr if ('celldiff' in x or 'burn' in x) and 'closure' not in x and 'with_avx2' not in x][:2]
    callers[(tid,f)][' <- '.join(key)]+=1
print('total',tot)
for t,n in th.most_common(3):
    print(t,n)
    for k,v in top[t].most_common(int(sys.argv[2]) if len(sys.argv)>2 else 10):
        print('    ',v,k)
        for kk,vv in callers[(t,k)].most_common(2): print('          ',vv,kk)

#!/usr/bin/env python3
"""Import cycles between the top-level modules of a crate: an edge A -> B when code (not
comments, not test modules) under module A names crate::B. Prints each cycle with its edges.
Usage: python3 scripts/modgraph.py trace-agent/src [--check]   (or tracer/src)
--check: exit 1 when there is a cycle (CI runs it on both crates).
--layers: without cycles, print each module's layer (0 = imports no other module; a module sits one
layer above the highest module it imports), so every import points down by construction."""
import os,re,sys,collections
root=sys.argv[1]  # e.g. trace-agent/src
mods={}
for dp,_,fs in os.walk(root):
    for f in fs:
        if not f.endswith('.rs'): continue
        p=os.path.join(dp,f); rel=os.path.relpath(p,root)
        top=rel.split(os.sep)[0].removesuffix('.rs')
        if top in ('lib','main'): continue
        mods.setdefault(top,[]).append(p)
# crate-root re-exports (`pub use span::{Span, Str};` in lib.rs) name the module they come from
reexp={}
lib=os.path.join(root,'lib.rs')
if os.path.exists(lib):
    for m in re.finditer(r'pub use (?:self::|crate::)?([a-z_]+)::(\{[^}]*\}|[A-Za-z_][A-Za-z0-9_]*)', open(lib).read()):
        for name in re.findall(r'[A-Za-z_][A-Za-z0-9_]*', m.group(2)):
            reexp.setdefault(name, m.group(1))
def targets(code):
    out=re.findall(r'crate::([A-Za-z_][A-Za-z0-9_]*)',code)
    for grp in re.findall(r'crate::\{([^}]*)\}',code):
        out+=re.findall(r'(?:^|,)\s*([A-Za-z_][A-Za-z0-9_]*)',grp)
    return [reexp.get(t,t) for t in out]
edges=collections.defaultdict(lambda: collections.Counter())
for m,files in mods.items():
    for p in files:
        txt=open(p).read()
        # skip test modules roughly: cut at '#[cfg(test)]'
        cut=txt.find('#[cfg(test)]')
        if cut>=0: txt=txt[:cut]
        if p.endswith('tests.rs') or '/tests/' in p: continue
        code='\n'.join(l for l in txt.split('\n') if not l.lstrip().startswith('//'))
        for t in targets(code):
            if t!=m and t in mods: edges[m][t]+=1
        if os.path.dirname(p)!=root or True:
            pass
# tarjan
idx={};low={};st=[];on=set();sccs=[];i=[0]
def sc(v):
    idx[v]=low[v]=i[0];i[0]+=1;st.append(v);on.add(v)
    for w in edges[v]:
        if w not in idx: sc(w);low[v]=min(low[v],low[w])
        elif w in on: low[v]=min(low[v],idx[w])
    if low[v]==idx[v]:
        c=[]
        while True:
            w=st.pop();on.discard(w);c.append(w)
            if w==v:break
        sccs.append(c)
sys.setrecursionlimit(10000)
for v in list(mods):
    if v not in idx: sc(v)
big=[c for c in sccs if len(c)>1]
print("modules:",len(mods),"edges:",sum(len(e) for e in edges.values()))
for c in big:
    print("cycle:",sorted(c))
    for a in sorted(c):
        for b in sorted(edges[a]):
            if b in c: print(f"   {a} -> {b} ({edges[a][b]})")
if not big: print("no cycles")
if not big and "--layers" in sys.argv[2:]:
    layer={}
    def depth(v):
        if v not in layer: layer[v]=1+max((depth(w) for w in edges[v]),default=-1)
        return layer[v]
    for v in mods: depth(v)
    for n in sorted(set(layer.values())):
        print(f"layer {n}:"," ".join(sorted(v for v in layer if layer[v]==n)))
if big and "--check" in sys.argv[2:]:
    sys.exit(1)

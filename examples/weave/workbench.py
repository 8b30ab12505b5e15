# Workflow shapes for benchmarks: treadle weave workbench.py PATTERN N
# PATTERN is map, chain, fanin, fanout or concurrent.
import os

args = CurrentScript().arguments
pattern = args[0] if args else 'map'
n = int(args[1]) if len(args) > 1 else 10
here = CurrentNest().work_dir
cat = ParseFunction('cat {IN} > {OUT}')

if pattern == 'map':
    # A FileList of N names; the inputs themselves are written only for small N.
    listing = os.path.join(here, f'map-{n}.list')
    os.makedirs(os.path.join(here, 'in'), exist_ok=True)
    with open(listing, 'w') as f:
        for i in range(n):
            name = os.path.join(here, 'in', f'{i}.txt')
            f.write(name + '\n')
            if n <= 1000:
                with open(name, 'w') as g:
                    g.write(f'{i}\n')
    Map('cat {IN} > {OUT}', FileList(listing), '{basename}.out')
elif pattern == 'chain':
    with open(os.path.join(here, 'chain.input'), 'w') as f:
        f.write('start\n')
    previous = os.path.join(here, 'chain.input')
    for i in range(n):
        previous = cat(previous, f'chain{i}.out')
elif pattern == 'fanin':
    Merge(Iterate('echo {ARG} > {OUT}', n, '{i}.part'), 'fanin.out')
elif pattern == 'fanout':
    with open(os.path.join(here, 'fanout.input'), 'w') as f:
        f.write('shared input\n')
    Iterate(cat, n, '{i}.out', includes=os.path.join(here, 'fanout.input'))
elif pattern == 'concurrent':
    Iterate('echo {ARG} > {OUT}', n, '{i}.out')
else:
    raise SystemExit(f'unknown pattern {pattern!r}: map, chain, fanin, fanout or concurrent')

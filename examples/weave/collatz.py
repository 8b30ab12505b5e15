# A script that decides its next step from real results: one nest per round.
import os

n = int(CurrentScript().arguments[0]) if CurrentScript().arguments else 6
step = ShellFunction('n=$(cat "$1"); if [ $((n % 2)) = 0 ]; then echo $((n / 2)); '
                     'else echo $((3 * n + 1)); fi', cmd_format='{EXE} {IN} > {OUT}')
seen, current = [n], os.path.join(CurrentNest().work_dir, 'v0')
open(current, 'w').write(f'{n}\n')
while n != 1:
    with Nest(f'round{len(seen)}') as nest:
        out = step(current, 'value')
        nest.compile()
        if not nest.execute():
            raise SystemExit('round failed')
    current = out[0].abspath
    n = int(open(current).read())
    seen.append(n)
print(' '.join(map(str, seen)))

"""Less common corners of the API, compiled and run together (spec weaver.md §2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SCRIPT = r"""
blobs = Glob('data/blobs/b0[1-4].bin')
AllPairs('BITWISE', blobs, blobs, outputs='bw.npy', symmetric=True, native=False, group=3)
AllPairs('BITWISE', blobs, blobs, outputs='bw-native.npy', symmetric=True)
size = ShellFunction('wc -c < "$1" > "$3"; wc -c < "$2" >> "$3"', cmd_format='{EXE} {IN} {OUT}')
AllPairs(size, blobs, blobs, outputs='{i}.pair', native='auto')
T = Glob('data/text/t0[1-4].txt')


def mapper(path, line):
    for w in line.split():
        print(f'{w[0].lower()}\t{w}')


def reducer(k, vs):
    print(f'{k}\t{len(vs)}')


MapReduce(mapper, reducer, T, '{i}.red', reducers=2)
print(len(list(MapReduce(mapper, reducer, T, reducers=2))))
with Nest():
    Map('cat {IN} > {OUT}', T, '{basename}.un')
Iterate('echo {ARG} > {OUT}', ['a', 'b'], ['ia.txt', 'ib.txt'])
add = ShellFunction('echo $(( $(cat $3) + $(cat $4) ))', cmd_format='{EXE} {IN} > {OUT}')
edge = {(x, 0): 1 for x in range(4)} | {(0, y): 1 for y in range(4)}
Wavefront(add, edge, 3, 3, outputs='wf-native.txt')
Wavefront(add, edge, 3, 3, outputs='wf-exp.txt', native=False)


class Twice(Abstraction):
    def _generate(self):
        f = ParseFunction(self.function)
        for i, x in enumerate(self.inputs):
            yield from f(x, f'twice{i}.txt')


Twice('cat {IN} {IN} > {OUT}', T)
imgs = SQLDataset('catalog.db', None, 'images', path='data/images/{name}', keep_alive=True,
                  query_format='SELECT {fields} FROM {table} WHERE {filters} AND width > 500')
print([f.name for f in Query(imgs, imgs.colour == 'blue')])
print(next(iter(T)).size == __import__('os').stat('data/text/t01.txt').st_size)
"""


def test_corners(examples: Path, tw) -> None:
    (examples / "corners.py").write_text(SCRIPT)
    sb, res = tw.weave(examples, "corners.py")
    assert res.stdout.splitlines() == ["2", "['cat1.img', 'cat3.img']", "True"]
    assert "AllPairs2 (corners.py:6): expanded, because F is its command" in res.stderr
    modes = {a["id"]: a["mode"] for a in sb.manifest["abstractions"]}
    assert modes["AllPairs0"] == "expanded" and modes["AllPairs1"] == "native"
    assert modes["Wavefront0"] == "native" and modes["Wavefront1"] == "expanded"
    unnamed = [r for r in sb.rules() if (r.workflow or "").startswith("_Stash/")
               and r.category == "default"]
    assert len(unnamed) == 1
    sb.run()
    a, b = np.load(sb.path / "bw.npy"), np.load(sb.path / "bw-native.npy")
    assert a.shape == (4, 4) and (a == b).all() and (a == a.T).all()
    assert sb.text("wf-native.txt") == sb.text("wf-exp.txt")
    assert sb.text("wf-native.txt").splitlines()[-1] == "3 3 20"
    pair = sb.text("00001.pair").split("\t")
    assert pair[:2] == [str(examples / "data/blobs/b01.bin"), str(examples / "data/blobs/b02.bin")]
    assert pair[2] == "256\n256\n"
    counts = {}
    for name in ("00000.red", "00001.red"):
        for line in sb.text(name).splitlines():
            k, n = line.split("\t")
            counts[k] = int(n)
    words = [w for n in range(1, 5) for w in (examples / f"data/text/t0{n}.txt").read_text().split()]
    assert sum(counts.values()) == len(words)
    assert sb.text("ib.txt") == "b\n"
    assert sb.text("twice0.txt") == (examples / "data/text/t01.txt").read_text() * 2
    assert (sb.path / "t04.txt.un").exists()

"""Sources of the small stdlib-only Python 3 programs that the compiler writes to the stash.

They run on workers, so they import nothing from treadle and work with python3 ≥ 3.8.
"""

from __future__ import annotations

PARTITIONER = '''#!/usr/bin/env python3
"""Split key<TAB>value lines into partitions by crc32(key) % R; remove the input."""
import os, sys, zlib

def main(argv):
    source, outs = argv[1], argv[3:]
    count = int(argv[2])
    files = [open(p, "w", encoding="utf-8", errors="surrogateescape") for p in outs]
    with open(source, encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            line = line.rstrip("\\n")
            if not line:
                continue
            key = line.split("\\t", 1)[0]
            part = zlib.crc32(key.encode("utf-8", "surrogateescape")) % count
            files[part].write(line + "\\n")
    for f in files:
        f.close()
    os.unlink(source)

if __name__ == "__main__":
    main(sys.argv)
'''

MAPPER_MAIN = '''

if __name__ == "__main__":
    for _path in sys.argv[1:]:
        with open(_path, encoding="utf-8", errors="surrogateescape") as _f:
            for _line in _f:
                {name}(_path, _line.rstrip("\\n"))
'''

REDUCER_MAIN = '''

if __name__ == "__main__":
    _key, _values = None, []
    with open(sys.argv[1], encoding="utf-8", errors="surrogateescape") as _f:
        for _line in _f:
            _k, _, _v = _line.rstrip("\\n").partition("\\t")
            if _k != _key and _values:
                {name}(_key, _values)
                _values = []
            _key = _k
            _values.append(_v)
    if _values:
        {name}(_key, _values)
'''

CELL_MAIN = '''

if __name__ == "__main__":
    _x, _y = int(sys.argv[1]), int(sys.argv[2])
    _vals = []
    for _p in sys.argv[3:6]:
        with open(_p, encoding="utf-8", errors="surrogateescape") as _f:
            _vals.append(_f.read().rstrip())
    print({name}(_x, _y, *_vals))
'''

WAVEFRONT_ASSEMBLER = '''#!/usr/bin/env python3
"""Write the cells listed in LIST (x<TAB>y<TAB>path lines) as sorted "x y value" lines."""
import os, sys

def main(listing, output):
    cells = []
    with open(listing, encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            x, y, path = line.rstrip("\\n").split("\\t", 2)
            with open(path, encoding="utf-8", errors="surrogateescape") as c:
                cells.append((int(x), int(y), c.read().rstrip()))
    cells.sort(key=lambda c: (c[0], c[1]))
    tmp = output + ".tmp"
    with open(tmp, "w", encoding="utf-8", errors="surrogateescape") as out:
        for x, y, value in cells:
            out.write("%d %d %s\\n" % (x, y, value))
    os.replace(tmp, output)

if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
'''

BITWISE = '''#!/usr/bin/env python3
"""The BITWISE comparison: differing bytes below the shorter length plus the length gap."""
import sys

with open(sys.argv[1], "rb") as fa, open(sys.argv[2], "rb") as fb:
    a, b = fa.read(), fb.read()
print(sum(x != y for x, y in zip(a, b)) + abs(len(a) - len(b)))
'''

#!/usr/bin/env python3
"""Write the fixtures of the Weaver examples, deterministically (the same bytes on every run).

    python3 make_data.py [DIR] [--irises N] [--blue K]

writes, under DIR (default: this script's directory):
  data/text/t01.txt … t08.txt    10–40 lines of alphanumeric words each
  data/blobs/b01.bin … b12.bin   256 seeded random bytes each
  catalog.db, data/images/*.img  a table images(id, name, colour, width, owner, thumb)
  irises/biometrics.db, irises/nef/*.nef
                                 N irises (default 12), K of them Blue (default 5), and
                                 the two tiny programs convertiristotemplate and
                                 compareiristemplates next to the database
Only the standard library is used, so the demo can run it anywhere.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sqlite3

HERE = os.path.dirname(os.path.abspath(__file__))
PROGRAMS = ("convertiristotemplate", "compareiristemplates")
WORDS = ("alpha", "beta", "gamma", "delta", "Iris", "eye", "blue", "green", "brown", "grey",
         "Notre", "Dame", "weave", "flow", "queue", "pairs", "data", "grid", "cloud", "x42",
         "template", "compare", "matrix", "2010", "ccl", "worker")


def make_text(root: str, rng: random.Random) -> None:
    d = os.path.join(root, "data", "text")
    os.makedirs(d, exist_ok=True)
    for n in range(1, 9):
        lines = []
        for _ in range(rng.randint(10, 40)):
            lines.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 8))))
        with open(os.path.join(d, f"t{n:02d}.txt"), "w") as f:
            f.write("\n".join(lines) + "\n")


def make_blobs(root: str, rng: random.Random) -> None:
    d = os.path.join(root, "data", "blobs")
    os.makedirs(d, exist_ok=True)
    for n in range(1, 13):
        with open(os.path.join(d, f"b{n:02d}.bin"), "wb") as f:
            f.write(bytes(rng.randrange(256) for _ in range(256)))


CATALOG = [  # name, colour, width, owner, has thumbnail
    ("cat1.img", "blue", 800, "alice", True),
    ("cat2.img", "red", 320, None, False),
    ("cat3.img", "blue", 1024, "O'Brien", False),
    ("dog1.img", "green", 640, "bob", True),
    ("dog2.img", "blue", 200, None, False),
    ("bird.img", "yellow", 1280, "carol", True),
    ("fish.img", "red", 480, "x' OR '1'='1", False),
    ("tree.img", "green", 300, None, True),
    ("moon.img", "white", 2048, "dave", False),
    ("sun.img", "yellow", 100, "O'Briens", True),
]


def make_catalog(root: str, rng: random.Random) -> None:
    d = os.path.join(root, "data", "images")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(root, "catalog.db")
    if os.path.exists(path):
        os.unlink(path)
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE images(id INTEGER PRIMARY KEY, name TEXT, colour TEXT, "
               "width INTEGER, owner TEXT, thumb TEXT)")
    for i, (name, colour, width, owner, thumb) in enumerate(CATALOG, 1):
        with open(os.path.join(d, name), "wb") as f:
            f.write(bytes(rng.randrange(256) for _ in range(200)))
        db.execute("INSERT INTO images VALUES (?, ?, ?, ?, ?, ?)",
                   (i, name, colour, width, owner, f"thumbs/{name}" if thumb else None))
    db.commit()
    db.close()


def make_irises(root: str, rng: random.Random, count: int = 12, blue: int = 5,
                programs: bool = True) -> None:
    d = os.path.join(root, "irises")
    nef = os.path.join(d, "nef")
    os.makedirs(nef, exist_ok=True)
    path = os.path.join(d, "biometrics.db")
    if os.path.exists(path):
        os.unlink(path)
    colours = ["Blue"] * blue + [rng.choice(("Brown", "Green", "Grey", "Hazel"))
                                 for _ in range(count - blue)]
    rng.shuffle(colours)
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE irises(fileid INTEGER PRIMARY KEY, color TEXT, subject TEXT, "
               "path TEXT)")
    for i, colour in enumerate(colours, 1):
        name = f"{1000 + i:04d}.nef"
        with open(os.path.join(nef, name), "wb") as f:
            f.write(bytes(rng.randrange(256) for _ in range(512)))
        db.execute("INSERT INTO irises VALUES (?, ?, ?, ?)",
                   (i, colour, f"subject{i % 7}", f"nef/{name}"))
    db.commit()
    db.close()
    for program in PROGRAMS if programs else ():
        source = os.path.join(HERE, "irises", program)
        target = os.path.join(d, program)
        if os.path.abspath(source) != os.path.abspath(target):
            shutil.copy(source, target)
        os.chmod(target, 0o755)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", nargs="?", default=HERE)
    parser.add_argument("--irises", type=int, default=12)
    parser.add_argument("--blue", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(2010)
    make_text(args.dir, rng)
    make_blobs(args.dir, rng)
    make_catalog(args.dir, rng)
    make_irises(args.dir, rng, args.irises, min(args.blue, args.irises))


if __name__ == "__main__":
    main()

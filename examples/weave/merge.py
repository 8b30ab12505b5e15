# A merge tree with fan-in 4: 40 parts -> 10 -> 3 -> 1, in input order.
parts = Iterate('seq {ARG} > {OUT}', range(1, 41), 'part{BASE}.txt')
Merge(parts, 'all.txt', group=4)

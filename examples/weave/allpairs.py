# AllPairs native (in-process Python) and expanded; a symmetric half as .npy.
def hamming(a, b):
    x, y = open(a, 'rb').read(), open(b, 'rb').read()
    return sum(p != q for p, q in zip(x, y)) + abs(len(x) - len(y))


blobs = Glob('data/blobs/*.bin')
AllPairs(hamming, blobs, blobs, outputs='native.txt')                  # auto: native, in-process
AllPairs(hamming, blobs, blobs, outputs='expanded.txt', native=False)  # 144 rules + 10 merges
AllPairs(hamming, blobs, blobs, outputs='half.npy', symmetric=True)    # native, 78 cells

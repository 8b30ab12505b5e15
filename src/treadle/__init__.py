"""treadle: run huge workloads of ordinary command-line tasks without a shared filesystem.

Layers, top to bottom: ``treadle.weave`` (compiler),
``treadle.flow`` (Makeflow language, DAG engine, journal), ``treadle.backends``
(where jobs run), ``treadle.queue`` (Work Queue), ``treadle.allpairs`` (native
abstractions). Nothing below imports from above.
"""

__version__ = "0.1.0"

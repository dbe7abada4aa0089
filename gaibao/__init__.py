"""gaibao: the 全面改薄 county-returns pipeline.

The shared core (settings, the contract's column catalogue, the division codes and the CLI)
lives here; the path of a return runs through the top-level packages ``tasks`` (fetch, read,
normalise, validate), ``warehouse`` (archive, lake, SQL) and ``reports`` (marts, render,
deliver), wired together by ``flows``.
"""

__version__ = "0.1.0"

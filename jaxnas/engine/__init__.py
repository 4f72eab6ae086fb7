"""The search engine: the compiled search loop (``search``), lanes over devices and processes
(``lanes``, ``distributed``), work directories (``workdir``) and the compilation cache."""

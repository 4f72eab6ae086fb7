"""The search engine: the compiled search loop (``search``), lanes over devices (``lanes``), several
processes (``distributed``) and the compilation cache (``compile_cache``)."""

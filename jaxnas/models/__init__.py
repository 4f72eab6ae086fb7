"""Networks: candidate ops (``ops``), supernets (``supernets``) and the discrete networks a search's
answer is retrained as (``networks``). Pure Flax modules; nothing here knows about data or search."""

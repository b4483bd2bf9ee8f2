"""Past one machine: the distributed crawl on Ray Data (`vecsearch index --engine ray`) and the shard
files it exchanges with other tools (`vecsearch export`, `vecsearch index --from-embeddings`).

Nothing here imports Ray until a distributed crawl starts; `pip install 'vecsearch[ray]'` adds it.
"""

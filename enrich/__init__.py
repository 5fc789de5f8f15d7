"""enrich: make a Markdown knowledge vault better with an LLM."""

import os

# The array work here (enrich.ranking) is many small products: OpenBLAS threads would only spin, burning CPU
# the event loop and a local model need. Set before numpy loads (it reads it then); a user's setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

"""python -m enrich"""

from .cli import main

main()

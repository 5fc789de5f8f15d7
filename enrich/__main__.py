"""`python -m enrich`: the same command line as the `enrich` script."""

from .cli import main

if __name__ == "__main__":
    main()

"""`python3 -m bench …` from benches/e2e."""

from .cli import main

main()

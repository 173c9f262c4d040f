"""pytest plugins loaded with -p (see Makefile: make test)."""

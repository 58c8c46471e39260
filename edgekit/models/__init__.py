"""Models: the catalog, GGUF headers, the fit check, verified downloads, and the steps that install them."""

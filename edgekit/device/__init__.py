"""Code that runs on the device inside the helper zipapp (edgekit.remote.helper): Python 3.8+, standard library only."""

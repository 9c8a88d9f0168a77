"""The default descriptors (the built-in matrix): `pytest --pyargs zdtmpy.descs`."""

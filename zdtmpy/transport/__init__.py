"""Transports between criu and image directories: zdtmpy's page server (and image streamer).

A library: nothing here imports pytest or knows about test cycles.
"""

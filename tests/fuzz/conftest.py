import os
import sys

# the suite's helper modules (fuzzkit, imagemut, ...) sit beside the tests
sys.path.insert(0, os.path.dirname(__file__))

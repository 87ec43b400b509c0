import os
import sys

# The suites import compare.py from this folder.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

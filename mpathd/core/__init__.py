"""The decisions of mpathd, sans I/O: this package opens no socket and reads
no clock (tests/test_layout.py checks its imports).
"""

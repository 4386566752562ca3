"""labeler's benchmarks: programs that print tables, never tests.

``python -m benchmarks`` runs the speed suite (benchmarks/speed.py);
``python benchmarks/local_quality.py`` measures the local teachers' label quality.
"""

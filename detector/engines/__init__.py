"""Execution engines for the heavy batch jobs (indexing a reference set, scoring a backlog).

The local engine is :mod:`detector.indexing` and :class:`detector.scoring.Detector` themselves;
:mod:`detector.engines.ray_indexing` and :mod:`detector.engines.ray_scoring` run the same jobs
on Ray Data (the optional ``ray`` extra, imported only when those modules run a job).
"""

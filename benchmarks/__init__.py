"""Benchmarks: aiotongyi against raw aiohttp, the dashscope SDKs and openai-python.

Run ``python -m benchmarks --quick`` (CI smoke) or ``python -m benchmarks`` (full);
see README.md in this folder. Not part of the installed package.
"""

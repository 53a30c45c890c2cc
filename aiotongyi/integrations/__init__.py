"""Adapters that plug aiotongyi into other frameworks.

Each submodule imports its framework on import and is never imported by
``aiotongyi`` itself: ``aiotongyi.integrations.dbgpt`` needs the
``aiotongyi[dbgpt]`` extra, ``aiotongyi.integrations.langchain`` the
``aiotongyi[langchain]`` extra.
"""

"""The interactive demo (``ovseg demo``): a Gradio app over ovseg's public API.

- :mod:`ovseg.demo.security`: binding, login, upload and served-path rules (no gradio);
- :mod:`ovseg.demo.handlers`: what each task computes, as plain functions (no gradio);
- :mod:`ovseg.demo.tabs`: one module per task's tab, listed in ``TABS``;
- :mod:`ovseg.demo.app`: the Blocks app and its launch (imports gradio: ``pip install 'ovseg[demo]'``);
- the ``ovseg demo`` command lives in :mod:`ovseg.commands.demo` (``demo_parser``).
"""

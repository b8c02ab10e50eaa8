"""The live page's static files (``static/``), served by :mod:`hub.api.page`."""

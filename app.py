"""inpaint studio: the Gradio UI at / and the JSON REST API beside it, in one server."""

from inpaint.api import create_app

if __name__ == "__main__":
    import sys

    from inpaint.server import serve

    sys.exit(serve(create_app))

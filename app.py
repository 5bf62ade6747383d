"""inpaint studio: the Gradio UI at / and the JSON REST API beside it, in one server."""

from inpaint import settings
from inpaint.api import create_app

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(create_app(), host=settings.HOST, port=settings.PORT)

"""Translators from other inpainting APIs (OpenAI's image edits, AUTOMATIC1111's /sdapi/v1) to the one request
schema, engine and job queue: existing clients work unchanged."""

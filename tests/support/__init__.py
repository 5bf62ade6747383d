"""What the test modules share: pictures, an engine and the API in front of it, real servers, job queues, the
store's test data and the studio's handlers. Fixtures among them are offered to every module by tests/conftest.py."""

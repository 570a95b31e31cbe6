"""The async client library: connect, resume, reconnect, upload files; the repl is built on it."""

from qa_ws_cli.client.connection import ClientOptions, QaWsClient
from qa_ws_cli.client.files import UploadedFile, upload_file

__all__ = ["ClientOptions", "QaWsClient", "UploadedFile", "upload_file"]

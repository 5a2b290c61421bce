"""Application layer: the chat interfaces (web and terminal); prompts, RAG and evaluation come next."""

"""Talking to the served model: prompt formats, the llama-server client, chat sessions, Ollama Modelfiles."""

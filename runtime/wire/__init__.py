"""The Triton wire contract shared by the server side and its clients: tensor names and what
the launcher hands the models through the environment. Imports nothing of Triton."""

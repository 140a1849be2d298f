"""Code that deploys tritonserver: serving configs, the rendered model repository, the process
launcher and its supervisor."""

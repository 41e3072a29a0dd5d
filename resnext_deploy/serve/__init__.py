"""Serving layer: ``resnext-deploy serve`` on Ray Serve, speaking the Open Inference Protocol.

Only :mod:`resnext_deploy.serve.app` and :mod:`resnext_deploy.serve.run` import Ray (the
``[serve]`` extra); the config, protocol, image decoding and routing modules do not, and no
other part of the package imports this one.
"""

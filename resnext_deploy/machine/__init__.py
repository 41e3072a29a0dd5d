"""Facts about this machine, each read in one place: the CPU from ``/proc/cpuinfo``
(:mod:`~resnext_deploy.machine.cpu`) and the NVIDIA GPU from NVML or ``nvidia-smi``
(:mod:`~resnext_deploy.machine.gpu`). No torch, so that doctor and the environment block work on
a torch-free install."""

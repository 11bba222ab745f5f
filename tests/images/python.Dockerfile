# Stand-in for the official python image, with the scaffold's requirements preinstalled.
FROM countable-test/base
ENV PIP_BREAK_SYSTEM_PACKAGES=1 \
    PIP_NO_INDEX=1 \
    LANG=C.UTF-8
CMD ["python3"]

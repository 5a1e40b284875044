# The reference pool: every role (frontend, backend, witness, director, edge, mediation, pstn-gateway) of one
# statically linked binary. Built by `poolchaos images` (harness/src/images.rs); never pulled.
FROM scratch
COPY poolnode /poolnode
LABEL org.poolchaos.image="poolnode"
ENTRYPOINT ["/poolnode"]

# The fault proxy: our Toxiproxy-compatible server (API on 8474). Built by `poolchaos images`; never pulled.
FROM scratch
COPY faultproxy /faultproxy
LABEL org.poolchaos.image="toxiproxy"
EXPOSE 8474
ENTRYPOINT ["/faultproxy"]
CMD ["--host", "0.0.0.0", "--port", "8474"]

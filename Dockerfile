# The app alone, under waitress; configured only by LDN_* environment variables (see README).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /srv/ldn-app
COPY pyproject.toml README.md ./
COPY smart_app ./smart_app
COPY fhir_profiles ./fhir_profiles
RUN pip install --no-cache-dir . && useradd --system --uid 10001 ldn
USER ldn
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)" || exit 1
CMD ["ldn-app", "serve", "--host", "0.0.0.0", "--port", "8000"]

-- One database per service; MARKET_DATABASE_URL in docker-compose.yml is the
-- template postgresql+psycopg://...@postgres:5432/market_{service}.
-- The postgres image runs this once, when its data volume is empty
-- (`docker compose down -v` to start over).
CREATE DATABASE market_api;
CREATE DATABASE market_billing;
CREATE DATABASE market_mailer;
CREATE DATABASE market_media;
CREATE DATABASE market_reports;

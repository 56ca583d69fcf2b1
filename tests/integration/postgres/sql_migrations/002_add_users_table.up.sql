CREATE TABLE users (
    id serial PRIMARY KEY,
    account_id int NOT NULL REFERENCES accounts (id),
    email text NOT NULL,
    name text
);

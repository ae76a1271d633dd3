-- Run once by the postgres image on an empty data volume: the Optuna studies' database.
CREATE DATABASE optuna OWNER vpr;

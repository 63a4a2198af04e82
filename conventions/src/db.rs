//! Database systems.

/// The Datadog span type of a database system (`db.system` / `db.system.name`; the agent's
/// `checkDBType`): `sql` for the SQL databases, the system's own type for the few that have
/// one, else `db`.
pub fn span_type(system: &str) -> &'static str {
    match system {
        "other_sql"
        | "mssql"
        | "microsoft.sql_server"
        | "mysql"
        | "oracle"
        | "oracle.db"
        | "db2"
        | "ibm.db2"
        | "postgresql"
        | "redshift"
        | "aws.redshift"
        | "cloudscape"
        | "hsqldb"
        | "maxdb"
        | "sap.maxdb"
        | "ingres"
        | "firstsql"
        | "edb"
        | "cache"
        | "intersystems.cache"
        | "firebird"
        | "firebirdsql"
        | "derby"
        | "informix"
        | "mariadb"
        | "sqlite"
        | "sybase"
        | "teradata"
        | "vertica"
        | "h2"
        | "h2database"
        | "coldfusion"
        | "cockroachdb"
        | "progress"
        | "hanadb"
        | "sap.hana"
        | "adabas"
        | "filemaker"
        | "instantdb"
        | "interbase"
        | "netezza"
        | "pervasive"
        | "pointbase"
        | "clickhouse"
        | "trino"
        | "spanner"
        | "gcp.spanner" => "sql",
        "cassandra" => "cassandra",
        "redis" => "redis",
        "memcached" => "memcached",
        "mongodb" => "mongodb",
        "elasticsearch" => "elasticsearch",
        "opensearch" => "opensearch",
        _ => "db",
    }
}

#[cfg(test)]
mod tests {
    use super::span_type;

    #[test]
    fn sql_systems_their_own_types_and_the_rest() {
        for sql in ["postgresql", "mysql", "sqlite", "gcp.spanner", "other_sql"] {
            assert_eq!(span_type(sql), "sql", "{sql}");
        }
        assert_eq!(span_type("redis"), "redis");
        assert_eq!(span_type("mongodb"), "mongodb");
        assert_eq!(span_type("opensearch"), "opensearch");
        assert_eq!(span_type("dynamodb"), "db");
        assert_eq!(span_type(""), "db");
        // Names are matched as written (the agent does not lower-case them).
        assert_eq!(span_type("PostgreSQL"), "db");
    }
}

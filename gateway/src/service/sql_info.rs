//! What the server tells drivers about itself (GetSqlInfo) and its types (GetXdbcTypeInfo).
//! Every value here is true of meshgate: drivers and BI tools act on them.

use arrow_flight::sql::metadata::{
    SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::{
    Nullable, Searchable, SqlInfo, SqlNullOrdering, SqlSupportedCaseSensitivity,
    SqlSupportedTransaction, XdbcDataType, XdbcDatetimeSubcode,
};

use crate::error::Result;
use meshgate_engine::MAX_SQL_BYTES;

/// The GetSqlInfo answers of this server, whose unused prepared statements are kept for
/// `prepared_ttl` (each use restarts it, as the protocol's statement timeout means).
pub(super) fn sql_info(prepared_ttl: std::time::Duration) -> Result<SqlInfoData> {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "meshgate");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerArrowVersion, "1.5 (arrow-rs 59)");
    b.append(SqlInfo::FlightSqlServerReadOnly, true);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    b.append(
        SqlInfo::FlightSqlServerTransaction,
        SqlSupportedTransaction::None as i32,
    );
    b.append(SqlInfo::FlightSqlServerCancel, true);
    b.append(SqlInfo::FlightSqlServerBulkIngestion, false);
    b.append(SqlInfo::FlightSqlServerIngestTransactionsSupported, false);
    // 0 would mean "no timeout": a TTL under a millisecond is reported as 1 ms.
    let prepared_ttl_ms = i32::try_from(prepared_ttl.as_millis())
        .unwrap_or(i32::MAX)
        .max(1);
    b.append(SqlInfo::FlightSqlServerStatementTimeout, prepared_ttl_ms);
    b.append(SqlInfo::FlightSqlServerTransactionTimeout, 0i32);
    b.append(SqlInfo::SqlDdlCatalog, false);
    b.append(SqlInfo::SqlDdlSchema, false);
    b.append(SqlInfo::SqlDdlTable, false);
    // Unquoted identifiers are folded to lower case; quoted ones keep their case.
    b.append(
        SqlInfo::SqlIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityLowercase as i32,
    );
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    b.append(
        SqlInfo::SqlQuotedIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityCaseInsensitive as i32,
    );
    b.append(SqlInfo::SqlAllTablesAreSelectable, true);
    b.append(
        SqlInfo::SqlNullOrdering,
        SqlNullOrdering::SqlNullsSortedHigh as i32,
    );
    b.append(SqlInfo::SqlSearchStringEscape, "\\");
    b.append(SqlInfo::SqlSupportsColumnAliasing, true);
    b.append(SqlInfo::SqlNullPlusNullIsNull, true);
    b.append(SqlInfo::SqlSupportsLikeEscapeClause, true);
    b.append(SqlInfo::SqlCatalogTerm, "domain");
    b.append(SqlInfo::SqlSchemaTerm, "product");
    b.append(SqlInfo::SqlCatalogAtStart, true);
    b.append(SqlInfo::SqlMaxStatementLength, MAX_SQL_BYTES as i32);
    b.append(SqlInfo::SqlTransactionsSupported, false);
    Ok(b.build()?)
}

/// Name, type, column size, literal prefix and suffix, and whether it is numeric.
type TypeEntry<'a> = (
    &'a str,
    XdbcDataType,
    Option<i32>,
    Option<(&'a str, &'a str)>,
    bool,
);

/// The GetXdbcTypeInfo answers: the SQL types a query can produce.
pub(super) fn xdbc_type_info() -> Result<XdbcTypeInfoData> {
    let mut b = XdbcTypeInfoDataBuilder::new();
    let entries: [TypeEntry<'_>; 12] = [
        ("BOOLEAN", XdbcDataType::XdbcBit, Some(1), None, false),
        ("TINYINT", XdbcDataType::XdbcTinyint, Some(3), None, true),
        ("SMALLINT", XdbcDataType::XdbcSmallint, Some(5), None, true),
        ("INTEGER", XdbcDataType::XdbcInteger, Some(10), None, true),
        ("BIGINT", XdbcDataType::XdbcBigint, Some(19), None, true),
        ("REAL", XdbcDataType::XdbcReal, Some(7), None, true),
        ("DOUBLE", XdbcDataType::XdbcDouble, Some(15), None, true),
        ("DECIMAL", XdbcDataType::XdbcDecimal, Some(38), None, true),
        (
            "VARCHAR",
            XdbcDataType::XdbcVarchar,
            None,
            Some(("'", "'")),
            false,
        ),
        (
            "BINARY",
            XdbcDataType::XdbcBinary,
            None,
            Some(("X'", "'")),
            false,
        ),
        (
            "DATE",
            XdbcDataType::XdbcDate,
            Some(10),
            Some(("DATE '", "'")),
            false,
        ),
        (
            "TIMESTAMP",
            XdbcDataType::XdbcTimestamp,
            Some(26),
            Some(("TIMESTAMP '", "'")),
            false,
        ),
    ];
    for (name, data_type, size, literal, numeric) in entries {
        let (datetime_subcode, sql_data_type) = match data_type {
            // Subcode 1 is DATE (the protocol aliases it with YEAR).
            XdbcDataType::XdbcDate => (
                Some(XdbcDatetimeSubcode::XdbcSubcodeYear),
                XdbcDataType::XdbcDatetime,
            ),
            XdbcDataType::XdbcTimestamp => (
                Some(XdbcDatetimeSubcode::XdbcSubcodeTimestamp),
                XdbcDataType::XdbcDatetime,
            ),
            other => (None, other),
        };
        b.append(XdbcTypeInfo {
            type_name: name.to_string(),
            data_type,
            column_size: size,
            literal_prefix: literal.map(|l| l.0.to_string()),
            literal_suffix: literal.map(|l| l.1.to_string()),
            create_params: (name == "DECIMAL")
                .then(|| vec!["precision".to_string(), "scale".to_string()]),
            nullable: Nullable::NullabilityNullable,
            case_sensitive: name == "VARCHAR",
            searchable: Searchable::Full,
            unsigned_attribute: numeric.then_some(false),
            fixed_prec_scale: name == "DECIMAL",
            auto_increment: numeric.then_some(false),
            local_type_name: Some(name.to_string()),
            minimum_scale: (name == "DECIMAL").then_some(0),
            maximum_scale: (name == "DECIMAL").then_some(38),
            sql_data_type,
            datetime_subcode,
            num_prec_radix: numeric.then_some(10),
            interval_precision: None,
        });
    }
    Ok(b.build()?)
}

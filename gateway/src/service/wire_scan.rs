//! Looking into a protobuf message's wire bytes before decoding it: how many times a
//! field occurs, alone or inside the occurrences of a nested message, without building anything.
//!
//! Decoding a repeated message field allocates per element (an empty `FlightEndpoint`
//! is 2 bytes on the wire and over 100 in memory), so a request that is small on the
//! wire can be large once decoded. Counting first lets a handler refuse such a
//! request for the price of reading it.

/// Why bytes are not a protobuf message this scanner reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed protobuf message")]
pub(super) struct Malformed;

/// The fields of the message in `bytes`, in order: each field number with its value's
/// bytes (for a length-delimited field, its content; otherwise, its raw encoding).
fn fields(mut bytes: &[u8]) -> impl Iterator<Item = Result<(u64, &[u8]), Malformed>> {
    std::iter::from_fn(move || {
        if bytes.is_empty() {
            return None;
        }
        let field = (|| {
            let key = varint(&mut bytes)?;
            let value_len = match key & 7 {
                0 => {
                    let start = bytes;
                    varint(&mut bytes)?;
                    return Ok((key >> 3, &start[..start.len() - bytes.len()]));
                }
                1 => 8,
                2 => usize::try_from(varint(&mut bytes)?).map_err(|_| Malformed)?,
                5 => 4,
                // Groups (3, 4) are not used by Flight's messages.
                _ => return Err(Malformed),
            };
            if value_len > bytes.len() {
                return Err(Malformed);
            }
            let (value, rest) = bytes.split_at(value_len);
            bytes = rest;
            Ok((key >> 3, value))
        })();
        if field.is_err() {
            bytes = &[];
        }
        Some(field)
    })
}

fn varint(bytes: &mut &[u8]) -> Result<u64, Malformed> {
    let mut value = 0u64;
    for (i, byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *bytes = &bytes[i + 1..];
            return Ok(value);
        }
    }
    Err(Malformed)
}

/// How many times field `number` occurs in the message in `bytes`.
pub(super) fn count_field(bytes: &[u8], number: u64) -> Result<usize, Malformed> {
    let mut count = 0;
    for field in fields(bytes) {
        if field?.0 == number {
            count += 1;
        }
    }
    Ok(count)
}

/// How many times field `inner` occurs in the messages of field `outer` of the message
/// in `bytes`, all occurrences of `outer` together (a decoder merges the occurrences of
/// a singular message field, so their repeated fields add up).
pub(super) fn count_nested(bytes: &[u8], outer: u64, inner: u64) -> Result<usize, Malformed> {
    let mut count = 0;
    for field in fields(bytes) {
        let (n, value) = field?;
        if n == outer {
            count += count_field(value, inner)?;
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use arrow_flight::{CancelFlightInfoRequest, FlightEndpoint, FlightInfo, Ticket};
    use prost::Message;

    use super::*;

    fn info(endpoints: usize) -> FlightInfo {
        let mut info = FlightInfo::new().with_total_records(7);
        for i in 0..endpoints {
            info =
                info.with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(vec![i as u8])));
        }
        info
    }

    #[test]
    fn counts_the_endpoints_of_a_flight_info_as_prost_decodes_them() {
        for n in [0, 1, 17, 300] {
            let bytes = info(n).encode_to_vec();
            assert_eq!(count_field(&bytes, 3), Ok(n));
            assert_eq!(
                FlightInfo::decode(bytes.as_slice()).unwrap().endpoint.len(),
                n
            );
        }
    }

    #[test]
    fn counts_the_endpoints_inside_a_cancel_request_across_repeated_infos() {
        let request = CancelFlightInfoRequest::new(info(3)).encode_to_vec();
        assert_eq!(count_nested(&request, 1, 3), Ok(3));
        assert_eq!(count_nested(&[], 1, 3), Ok(0));
        // The info sent twice: a decoder merges the two, endpoints and all.
        let twice = [request.clone(), request].concat();
        assert_eq!(count_nested(&twice, 1, 3), Ok(6));
        let decoded = CancelFlightInfoRequest::decode(twice.as_slice()).unwrap();
        assert_eq!(decoded.info.unwrap().endpoint.len(), 6);
    }

    #[test]
    fn malformed_bytes_are_refused_not_read_past() {
        let bytes = info(2).encode_to_vec();
        assert_eq!(count_field(&bytes[..bytes.len() - 1], 3), Err(Malformed));
        assert_eq!(count_field(&[0xff; 11], 3), Err(Malformed));
        assert_eq!(count_field(&[0x1b], 3), Err(Malformed), "a group");
    }
}

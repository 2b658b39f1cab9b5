// Duration conversions: seconds for reports, whole nanoseconds (truncated, saturating) for the
// APIs that count in nanoseconds.

import StrataCore
import Testing

@Suite struct DurationConversionTests {
  @Test func secondsKeepTheFraction() {
    #expect(Duration.milliseconds(1_500).inSeconds == 1.5)
    #expect(Duration.microseconds(-250).inSeconds == -0.00025)
    #expect(Duration.zero.inSeconds == 0)
  }

  @Test func nanosecondsTruncateTowardZero() {
    #expect(Duration.seconds(3).inNanoseconds == 3_000_000_000)
    #expect(
      (Duration.nanoseconds(7) + .init(secondsComponent: 0, attosecondsComponent: 999_999_999)).inNanoseconds == 7)
    #expect(Duration.nanoseconds(-7).inNanoseconds == -7)
  }

  @Test func nanosecondsHoldAtTheEnds() {
    let years300 = Duration.seconds(300 * 365 * 86_400)
    #expect(years300.inNanoseconds == .max)
    #expect((.zero - years300).inNanoseconds == .min)
    #expect(Duration.seconds(Int64.max / 1_000_000_000).inNanoseconds == Int64.max / 1_000_000_000 * 1_000_000_000)
  }
}

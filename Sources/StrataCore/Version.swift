// The release of this build, reported by `strata version` and, later, in HELLO.

public enum StrataVersion {
  public static let current = "0.1.0"
}
